"""The upstream engine: OpenAI-compatible servers (LMDeploy, vLLM, ...) over HTTP, with
replicas, each upstream's dialect, its errors, and LMDeploy's quirks smoothed over."""
