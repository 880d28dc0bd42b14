"""`reactor dashboard`: the operator's web app, served beside the workers from the same image.

It reaches the project as the worker does, over PostgREST with the service-role key, which stays
in this process: the browser gets rendered HTML and server-sent events, never the key or a
Supabase connection. It runs on aiohttp (reactor/web.py, the stack the worker's /healthz uses too)
and renders with Jinja2, which escapes every value by default, since job payloads and errors
are written by users.

Modules: settings (the command line and environment), auth (loopback, tokens, sessions, the
origin checks), project (every read and action over the API), activity (the numbers the overview
derives from rows), live (the polling and Realtime behind the event streams), audit (the action
log), pages (the routes and templates), server (running it).
"""
