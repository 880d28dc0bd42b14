"""The local stack's `/rest/v1`, a subset of PostgREST.

endpoint.py routes requests, checks tokens and answers errors as PostgREST does; rpc.py and
tables.py turn function calls and table requests into SQL; backend.py runs that SQL as PostgREST
runs a request; read.py plans a table read and its embedded resources over the relationships in
the schema cache, catalog.py; query.py reads PostgREST's URL grammar and negotiates media types.
Each imports only modules listed after it and the stack's shared keys.py and faults.py, never
../realtime/ (the stack's contracts in .importlinter).
"""
