"""comfykube's web gallery: a read-only view of ImageJobs (`comfykube web`).

One watch per server feeds an in-memory index (`index.py`, `feed.py`); pages are
server-side Jinja2 templates with a little JavaScript for live updates over
Server-Sent Events (`stream.py`); images are shown through presigned URLs minted when
a page is served (`links.py`). It never writes to the cluster.
"""
