% include('header.tpl', title='Sites')
% if not sites:
<p>No sites are configured.</p>
% end
% for site in sites:
<section class="site" id="site-{{site.name}}">
<h2>{{site.name}}</h2>
<p>Commands: 
% for command in site.commands:
<code>{{command}}</code>
% end
</p>
<table class="states">
<tr>
% for state, count in site.by_state:
<th>{{state}}</th>
% end
</tr>
<tr>
% for state, count in site.by_state:
<td><a href="{{prefix}}/calcs?site={{site.name}}&amp;state={{state}}">{{count}}</a></td>
% end
</tr>
</table>
% if site.pollers:
<table class="pollers">
<tr><th>Poller</th>
% if session.admin:
<th>User</th>
% end
<th>Last seen</th><th>Version</th><th></th></tr>
% for poller in site.pollers:
<tr><td>{{poller.poller}}</td>
% if session.admin:
<td>{{poller.user or ""}}</td>
% end
<td>{{poller.seen_ago}} ago</td><td>{{poller.version}}</td>
<td class="{{'live' if poller.live else 'absent'}}">{{'live' if poller.live else 'absent'}}</td></tr>
% end
</table>
% else:
<p class="absent">No poller has been seen for this site since the server started.</p>
% end
</section>
% end
% include('footer.tpl')
