"""`vlserve launch`: the engine as a supervised child, the gateway in front of it.

1. Start the engine (LMDeploy by default) in its own process group.
2. Serve the gateway at once with an UpstreamEngine pointed at it: /health is 503 while
   the engine loads, 200 once its /v1/models answers.
3. Supervise: an engine that does not become ready within ENGINE_STARTUP_TIMEOUT_S, or
   that exits, stops the launcher with a non-zero code after in-flight requests end
   (so Docker or Kubernetes restart the container) — or, with ENGINE_RESTART, is
   restarted with backoff.
4. SIGTERM/SIGINT: stop accepting, drain in-flight requests up to DRAIN_TIMEOUT_S, stop
   the engine's whole process group (SIGTERM, then SIGKILL), exit 0.
"""

from __future__ import annotations

import asyncio
import logging

from vlserve.config import Settings
from vlserve.engines.upstream.engine import UpstreamEngine
from vlserve.launch.engine_command import engine_command, engine_env, engine_url
from vlserve.launch.engine_process import EngineProcess
from vlserve.server.app import create_app
from vlserve.server.serving import Server, install_drain, make_server, run

log = logging.getLogger("vlserve.launch")


class Launcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_settings = settings.model_copy(update={"upstream_base_url": [engine_url(settings)],
                                                            "engine": "upstream"})
        self.engine = UpstreamEngine(self.gateway_settings)
        self.process = EngineProcess(engine_command(settings), engine_env(settings))
        self.stopping = False
        self.server: Server | None = None

    async def run(self) -> int:
        app = create_app(self.gateway_settings, engine=self.engine)
        s = self.settings
        self.server = make_server(app, s)
        install_drain(self.server, app, s.drain_timeout_s, on_signal=self._on_signal)
        await self.process.start()
        serving = asyncio.create_task(self.server.serve())
        supervising = asyncio.create_task(self._supervise())
        try:
            done, _ = await asyncio.wait({serving, supervising}, return_when=asyncio.FIRST_COMPLETED)
            if supervising in done:
                code = supervising.result()
                self.server.should_exit = True  # in-flight requests end first
                await serving
            else:
                supervising.cancel()
                code = 0 if self.stopping else 1
        finally:
            await self.process.stop(self.settings.engine_stop_timeout_s)
        log.info("launcher exiting with code %d", code)
        return code

    def _on_signal(self, sig: int) -> None:
        self.stopping = True  # the engine is stopped once the gateway has drained

    async def _supervise(self) -> int:
        restarts = 0
        while True:
            if not await self._wait_ready():
                return 1
            code = await self.process.wait()
            self.engine.mark_down(f"the engine process exited with code {code}")
            if self.stopping:
                return 0
            if not self.settings.engine_restart or restarts >= self.settings.engine_max_restarts:
                log.error("engine exited with code %d; stopping so the container restarts. Its last lines:\n%s",
                          code, "\n".join(self.process.tail))
                return 1
            restarts += 1
            delay = min(60, 2 ** restarts)
            log.warning("engine exited with code %d; restart %d/%d in %d s", code, restarts,
                        self.settings.engine_max_restarts, delay)
            await asyncio.sleep(delay)
            await self.process.start()

    async def _wait_ready(self) -> bool:
        timeout = self.settings.engine_startup_timeout_s
        ready = asyncio.create_task(self.engine.wait_ready(timeout))
        exited = asyncio.create_task(self.process.wait())
        done, _ = await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        tail = "\n".join(self.process.tail) or "(no output)"
        if exited in done and not exited.cancelled():
            log.error("engine exited with code %s while starting. Its last lines:\n%s", exited.result(), tail)
            return False
        if not ready.result():
            log.error("engine did not become ready within %.0f s (ENGINE_STARTUP_TIMEOUT_S). "
                      "Its last lines:\n%s", timeout, tail)
            return False
        log.info("engine ready: %s", ", ".join(self.engine.status().models))
        return True


def run_launcher(settings: Settings) -> int:
    return run(Launcher(settings).run())
