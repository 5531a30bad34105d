#!/usr/bin/env bash
# LMDeploy's own Qwen3-VL preprocessing, for the contract test that runs it on the bodies
# vlserve sends (tests/integration/test_lmdeploy_preprocessing.py). LMDeploy's wheels
# install without a GPU; its Python preprocessing runs on the CPU. Each version goes
# into its own folder under .cache/lmdeploy/ (not into the venv: two versions, and their
# torch pins are not ours), with the few small packages its imports need. 0.11.1 calls
# the image processor in a way transformers 5 refuses, so it gets transformers 4.57.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=".venv/bin/pip install --quiet --no-deps --target"
root=.cache/lmdeploy
for version in 0.11.1 0.18.0; do
    [ -f "$root/$version/lmdeploy/version.py" ] || $PIP "$root/$version" "lmdeploy==$version"
done
[ -d "$root/deps/mmengine" ] || $PIP "$root/deps" mmengine-lite==0.10.7 yapf==0.43.0 platformdirs addict \
    termcolor psutil requests urllib3 certifi
[ -d "$root/transformers4/transformers" ] || $PIP "$root/transformers4" transformers==4.57.6 \
    huggingface_hub==0.36.2 tokenizers==0.22.2
echo "lmdeploy preprocessing: $(ls -d $root/0.* | xargs -n1 basename | tr '\n' ' ')in $root"
