"""The dashboard at /dashboard/: flows drawn live, funnels, people and their timelines.

See docs/dashboard.md. Pages are Django views (views.py) over one module of
SQL (queries.py); live updates come over a WebSocket at /dashboard/live
(live.py) authenticated by the staff session.
"""
