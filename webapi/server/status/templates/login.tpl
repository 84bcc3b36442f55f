% include('header.tpl', title='Log in')
% if message:
<p class="error" id="message">{{message}}</p>
% end
<form method="post" action="{{prefix}}/login" class="login">
<input type="hidden" name="nonce" value="{{nonce}}">
<fieldset>
<legend>With an API token</legend>
<label for="token">Token</label>
<input type="password" id="token" name="token" autocomplete="off">
</fieldset>
<fieldset>
<legend>Or with a user name and password</legend>
<label for="user">User</label>
<input type="text" id="user" name="user" autocomplete="username">
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password">
</fieldset>
<button type="submit" id="login">Log in</button>
</form>
% include('footer.tpl')
