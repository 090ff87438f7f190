#!/usr/bin/env bash
# The CUDA path on a lent GPU machine, in one short run (issue 30: ms per iteration of iJO1366 on one GPU, four
# trainings sharing it as `--gpus-per-trial 0.25` would, and the mission network beside them for the ratio).
#
# That machine has PyTorch with CUDA, numpy, scipy, pandas, scikit-learn, matplotlib, tqdm and PyYAML, but not
# pydantic or cobra: carry them as wheels for its Python 3.12. Once, here, in the repo's root:
#
#     echo /.whl/ >> .git/info/exclude
#     python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#         cobra appdirs depinfo future optlang python-libsbml ruamel.yaml swiglpk \
#         pydantic pydantic-core annotated-types typing-inspection     # the versions pip show gives in .venv
#
# then run this script there with `.whl` carried (about 15 MB). Results: $OUT/scale_cuda.csv and $OUT/log. Ray is
# not needed (too large to carry): the four trainings are four processes on the one GPU.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/log"
python3 benchmarks/bench_train.py --scale --device cuda --networks random_100,iJO1366 --iterations 100 --windows 3 \
    --parallel 4 --csv "$out/scale_cuda.csv" 2>&1 | tee -a "$out/log"
