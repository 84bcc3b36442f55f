% include('header.tpl', title='Not possible')
<p class="error" id="message">{{message}}</p>
% if session:
<p><a href="{{prefix}}/sites">Back to the sites</a></p>
% else:
<p><a href="{{prefix}}/login">Log in</a></p>
% end
% include('footer.tpl')
