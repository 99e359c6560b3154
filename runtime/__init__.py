"""What kuiperd drives: the supervisor, the worker, its function channels and rule revival."""
