"""The local stack's `/auth/v1`: the part of Supabase Auth (GoTrue) that supabase-js and supabase-py
use to sign users in, for local development only.

endpoint.py routes requests, checks the API key and bearer tokens; sessions.py issues sessions,
their access tokens and rotating refresh tokens; users.py keeps users in `auth.users`; body.py
reads request bodies as GoTrue reads them, and errors.py answers errors in its two shapes.
Each imports only modules listed after it and the stack's shared keys.py, never ../rest/ or
../realtime/ (the stack's contracts in .importlinter).
"""
