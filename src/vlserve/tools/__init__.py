"""Client tools the server never runs: the typed client, the batch analyser, the load
generator and result drawing, all used by the `vlserve` command."""
