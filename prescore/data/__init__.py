"""A team's declared datasets and their files.

The declarations (``datasets``), folders on ``file://``, ``hdfs://``, ``s3://`` or ``gs://``
(``storage``, ``object_store``), tables read outside Spark (``local_tables``) and images by
key (``images``).
"""
