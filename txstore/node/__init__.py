"""
One storage host's node, assembled on top of the layers below it: the backend HTTP front
(`server`), recon (`recon`), the consistency daemons and the replication listener wired
together (`assembly`), and ``twistd objectnode`` (`tap`). Nothing in ``txstore.storage``,
``txstore.daemons`` or ``txstore.replication`` imports from here.
"""
