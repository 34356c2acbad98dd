# See README.md. Every target sets up .venv first (seconds when it exists).
PY := .venv/bin/python
TOY_DATA := data/toy/annotations/train.json

.PHONY: install data test demo bench clean

install:
	@bash tools/install.sh

$(TOY_DATA): mmdet_freebies/datasets/toy/generator.py | install
	$(PY) tools/make_toy_dataset.py --out data/toy

data: install $(TOY_DATA)

test: install
	$(PY) -m pytest -q tests

# one thread: CPU results depend on the thread count (docs/sampling_free.md)
demo: data
	OMP_NUM_THREADS=1 $(PY) tools/ablate.py configs/retinanet_fl.py configs/retinanet_ce.py configs/retinanet_ce_sf.py \
		--toy small --work-dir work_dirs/demo

# one thread, as the timed rows: docs/benchmarks.md states the default
bench: install data
	OMP_NUM_THREADS=1 $(PY) benchmarks/run_all.py --out docs/benchmarks.md

clean:
	rm -rf work_dirs
