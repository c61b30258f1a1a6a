#!/usr/bin/env bash
# The GPU check, one prepared script: the CUDA training paths end to end (AMP on, FAM forwards in float32, every
# objective, refinement, checkpoint resume, predict, evaluate) on the demo's synthetic skulls, then the FAM step
# benchmark on the device at 64x64x32 and 128x128x64 (batch 2; also with the convolution twins, fam.conv_twins) and
# at paper scale, 256x256x128 (batch 1), a kernel profile, and peak memory against the input size (fam.chunk too).
#   bash benchmarks/gpu_check.sh OUT_DIR        (the package importable: pip install -e . or PYTHONPATH)
set -euo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.get_device_name(0))"
start=$(date +%s)
# the demo, shortened: on CUDA the kappa step is far slower than on the CPU (docs/performance.md), and the full demo
# took about 8 minutes there
python3 -m fam_skull demo --output "$out/demo" --quiet run.train.device=cuda prepare.workers=8 run.train.epochs=6 \
  run.train.val_every=2 run.fam.warmup_steps=60
data="$out/demo/data/manifest.json"
base=("$out/demo/runs/baseline_s0/config.yaml" train.device=cuda train.amp=true train.epochs=3 train.val_every=1)
for objective in kappa published l2; do  # fisher, the default, ran in the demo
  python3 -m fam_skull train "${base[@]}" method=fam fam.objective=$objective fam.warmup_steps=0 "output=$out/runs/$objective" --quiet
done
python3 -m fam_skull train "${base[@]}" method=sam "output=$out/runs/sam" --quiet
python3 -m fam_skull train "${base[@]}" method=fam train.epochs=2 "output=$out/runs/resumed" --quiet
python3 -m fam_skull train train.epochs=3 --resume "$out/runs/resumed" --quiet
python3 -m fam_skull predict --run "$out/demo/runs/fam_3_refined_s0" --manifest "$data" --output "$out/pred" --device cuda --quiet
python3 -m fam_skull evaluate "refined on cuda=$out/pred" --manifest "$data" --output "$out/eval" --quiet
cat "$out/eval/table_quality.md"
echo "pipeline on cuda: $(( $(date +%s) - start )) s"
for shape in 64,64,32 128,128,64; do
  python3 benchmarks/fam_step.py --device cuda --shape $shape --steps 10 --repeats 1 \
    --only baseline,fam:kappa/1,fam:kappa/1/t,fam:kappa/5,fam:fisher/1,fam:fisher/1/t,fam:published/5,fam:l2/1,sam
done
python3 benchmarks/fam_step.py --device cuda --shape 256,256,128 --batch 1 --steps 5 --repeats 1 \
  --only baseline,fam:kappa/1,fam:kappa/1/t,fam:fisher/1,fam:fisher/1/t,sam
# which kernels the CUDA kappa step spends its time in, stock and with the convolution twins
python3 benchmarks/fam_profile.py --device cuda --shape 128,128,64
# peak device memory of one step against the input size, fitted and extrapolated to 256x256x128
(cd benchmarks && python3 fam_memory.py --device cuda)
