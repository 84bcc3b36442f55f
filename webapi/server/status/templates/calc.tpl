% include('header.tpl', title='Calc ' + calc.id)
<table class="summary">
<tr><th>User</th><td>{{calc.user}}</td></tr>
<tr><th>Site</th><td>{{calc.site}}</td></tr>
<tr><th>Command</th><td><code>{{calc.command}} {{calc.args}}</code></td></tr>
<tr><th>State</th><td id="state">{{calc.state}}</td></tr>
<tr><th>Reason</th><td>{{calc.reason}}</td></tr>
<tr><th>Attempts</th><td>{{calc.attempts}}</td></tr>
<tr><th>Exit code</th><td>{{calc.exit_code}}</td></tr>
<tr><th>Lease holder</th><td>{{calc.lease}}</td></tr>
<tr><th>Progress</th><td>{{calc.progress}}</td></tr>
<tr><th>Created</th><td>{{calc.created}}</td></tr>
<tr><th>Updated</th><td>{{calc.updated}}</td></tr>
</table>
<h2>State history</h2>
<table class="history">
<tr><th>State</th><th>At</th><th>Reason</th><th>Poller</th></tr>
% for step in calc.history:
<tr><td>{{step.state}}</td><td>{{step.at}}</td><td>{{step.reason}}</td><td>{{step.poller}}</td></tr>
% end
</table>
% for title, files in (('Inputs', calc.inputs), ('Results', calc.results)):
<h2>{{title}}</h2>
% if files:
<table class="files">
<tr><th>Name</th><th>Size (bytes)</th><th>Received</th><th>sha256</th></tr>
% for f in files:
<tr><td><code>{{f.name}}</code></td><td>{{f.size}}</td><td>{{f.received}}</td><td><code class="sha">{{f.sha256}}</code></td></tr>
% end
</table>
% else:
<p>None.</p>
% end
% end
% for title, text in (('stdout (tail)', calc.stdout_tail), ('stderr (tail)', calc.stderr_tail)):
% if text is not None:
<h2>{{title}}</h2>
<pre class="log">{{text}}</pre>
% end
% end
<h2>From the command line</h2>
<pre class="cli">
% for line in calc.fetch_commands:
{{line}}
% end
</pre>
% if session.admin and calc.actions:
<h2>Admin actions</h2>
<div class="actions">
% for action in calc.actions:
<form method="post" action="{{prefix}}/calcs/{{calc.id}}/{{action}}">
<input type="hidden" name="csrf" value="{{session.csrf}}">
% if action == 'fail':
<input type="text" name="reason" placeholder="reason (shown to its owner)" required>
% end
<button type="submit" id="do-{{action}}">{{action.capitalize()}}</button>
</form>
% end
</div>
% end
% include('footer.tpl')
