% include('header.tpl', title='Queue')
% if not rows:
<p id="empty">No calc is waiting.</p>
% else:
<table class="queue">
<tr><th>Calc</th><th>User</th><th>Site</th><th>Command</th><th>State</th><th>Waiting for</th><th>Why it waits</th></tr>
% for row in rows:
<tr><td><a href="{{prefix}}/calcs/{{row.id}}">{{row.id}}</a></td><td>{{row.user}}</td><td>{{row.site}}</td>
<td><code>{{row.command}}</code></td><td>{{row.state}}</td><td>{{row.waiting}}</td><td>{{row.why}}</td></tr>
% end
</table>
% end
% include('footer.tpl')
