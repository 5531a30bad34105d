"""`vlserve launch`: the engine's command line, its child process, and the supervisor
that runs the gateway in front of it."""
