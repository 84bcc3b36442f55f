% include('header.tpl', title=title)
% if not rows:
<p id="empty">No calcs.</p>
% else:
% if total > len(rows):
<p class="note">The {{len(rows)}} most recently changed of {{total}} calcs; filter by state to see others.</p>
% end
<table class="calcs">
<tr><th>Calc</th><th>User</th><th>Site</th><th>Command</th><th>State</th><th>Updated</th><th>Reason</th></tr>
% for row in rows:
<tr><td><a href="{{prefix}}/calcs/{{row.id}}">{{row.id}}</a></td><td>{{row.user}}</td><td>{{row.site}}</td>
<td><code>{{row.command}}</code></td><td>{{row.state}}</td><td>{{row.updated}}</td><td>{{row.reason}}</td></tr>
% end
</table>
% end
% include('footer.tpl')
