"""GLUE tasks and their loading, tokenised length-grouped batches, and the task metrics."""
