"""The worker protocol, the client that starts and talks to a worker process, and the job that follows one
request to its end."""
