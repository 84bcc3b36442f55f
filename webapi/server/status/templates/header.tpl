<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · extcomp status</title>
<link rel="stylesheet" href="{{prefix}}/static/status.css">
</head>
<body>
<header>
<strong>extcomp status</strong>
% if session:
<nav>
<a href="{{prefix}}/sites">Sites</a>
<a href="{{prefix}}/queue">Queue</a>
<a href="{{prefix}}/calcs">Calcs</a>
</nav>
<form class="logout" method="post" action="{{prefix}}/logout">
<span id="who">{{session.user}}{{" (admin)" if session.admin else ""}}</span>
<input type="hidden" name="csrf" value="{{session.csrf}}">
<button type="submit">Log out</button>
</form>
% end
</header>
<main>
<h1>{{title}}</h1>
% if refresh:
<p class="note">This page reloads itself every few seconds.</p>
% end
