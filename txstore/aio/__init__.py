"""The all-in-one launcher: a whole cluster on 127.0.0.1 for one laptop."""
