"""The local stack's Realtime: `/realtime/v1/websocket` with postgres_changes, Broadcast, Presence.

endpoint.py accepts sockets and fans each change out; socket.py speaks one socket's channel
protocol; hub.py shares broadcasts and presence between sockets; access.py decides what a
subscriber may see of a change; filters.py reads bindings, changes.py (with changes.sql) captures
committed changes, and phoenix.py encodes frames.
Each imports only modules listed after it and the stack's shared keys.py and faults.py, never
../rest/ (the stack's contracts in .importlinter).
"""
