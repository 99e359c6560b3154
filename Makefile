# The defect eKuiper plugin. On a fresh machine: `make demo`, then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FIXTURES ?= ../shared/fixtures
KUIPER_VERSION := 2.4.2
# kuiperd is kept across clones (and CI runs): built once per version.
KUIPERD_DIR := $(HOME)/.cache/defect/kuiperd-$(KUIPER_VERSION)
KUIPERD := $(KUIPERD_DIR)/kuiperd
# What eKuiper installs: the zip's root is the plugin dir.
PLUGIN_FILES := main.py supervisor.py worker.py errors.py label_func.py batch_func.py thread_tuning.py label.py inference.py image_input.py \
                settings.py function_server.py rule_revival.py command_line.py config.json defect.json requirements.txt \
                install.sh
MODEL_FILES := models/model.xml models/model.bin models/mobilenet_v2_1.0_224_quant.tflite \
               models/imagenet_labels.txt models/sample_surface.png models/sample_cat.jpg

.PHONY: venv models package package-offline kuiperd demo lint test test-fast bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt services/requirements.txt tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r services/requirements.txt -r tests/requirements.txt
	touch $@

models: models/.built
models/.built: models/build_models.py tests/synthetic_surface.py $(VENV)/.installed
	@test -d $(FIXTURES)/models || { echo "fixtures not found at $(FIXTURES) (set FIXTURES=...)"; exit 1; }
	$(PY) models/build_models.py --fixtures $(FIXTURES)
	touch $@

# Your own defect model in the zip (e.g. an anomalib export): `make package CUSTOM_MODEL=path/to/model.xml`
# puts it (and its .bin) in models/custom/ and makes it the zip's defect.model.
CUSTOM_MODEL ?=

package: build/defect.zip
build/defect.zip: $(PLUGIN_FILES) functions/*.json models/.built Makefile build/.custom-model $(CUSTOM_MODEL)
	rm -rf build/defect build/defect.zip && mkdir -p build/defect/models build/defect/functions
	cp $(PLUGIN_FILES) build/defect/
	cp functions/*.json build/defect/functions/
	cp $(MODEL_FILES) build/defect/models/
	if [ -n "$(CUSTOM_MODEL)" ]; then \
	  mkdir -p build/defect/models/custom && cp "$(CUSTOM_MODEL)" build/defect/models/custom/ && \
	  if [ -f "$(basename $(CUSTOM_MODEL)).bin" ]; then cp "$(basename $(CUSTOM_MODEL)).bin" build/defect/models/custom/; fi && \
	  $(PY) -c 'import json, sys; p = "build/defect/config.json"; c = json.load(open(p)); c["defect"]["model"] = sys.argv[1]; json.dump(c, open(p, "w"), indent=2)' \
	    "models/custom/$(notdir $(CUSTOM_MODEL))"; fi
	# python -m zipfile writes directory entries too, which kuiperd needs to unpack nested folders.
	cd build/defect && ../../$(PY) -m zipfile -c ../defect.zip *
	@echo "wrote $@"

# Changes only when CUSTOM_MODEL does, so a zip never keeps a model it was not asked for.
build/.custom-model: FORCE
	@mkdir -p build && [ "$$(cat $@ 2>/dev/null)" == "$(CUSTOM_MODEL)" ] || echo "$(CUSTOM_MODEL)" > $@
FORCE:

# The same zip plus wheels/ for an offline box: install.sh then installs with --no-index.
# pip takes each tag literally: list the manylinux levels the wheels are published for.
WHEEL_PLATFORMS ?= manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64
WHEEL_PYTHON ?= 3.11
package-offline: build/defect-offline.zip
build/defect-offline.zip: build/defect.zip requirements.txt
	rm -rf build/offline build/defect-offline.zip && cp -r build/defect build/offline
	$(PY) -m pip download --disable-pip-version-check -q --only-binary=:all: \
	  $(addprefix --platform ,$(WHEEL_PLATFORMS)) --python-version $(WHEEL_PYTHON) \
	  --implementation cp --abi cp$(subst .,,$(WHEEL_PYTHON)) --abi abi3 --abi none -d build/offline/wheels -r requirements.txt
	cd build/offline && ../../$(PY) -m zipfile -c ../defect-offline.zip *
	@echo "wrote $@ for $(WHEEL_PLATFORMS), Python $(WHEEL_PYTHON)"

kuiperd: $(KUIPERD)
$(KUIPERD): | tests/e2e/build_kuiperd.sh
	tests/e2e/build_kuiperd.sh $(KUIPER_VERSION) $(KUIPERD_DIR)

demo: package kuiperd
	$(PY) label.py $(FIXTURES)/images/cat.bmp $(FIXTURES)/images/cat_1080p.jpg
	$(PY) inference.py models/sample_surface.png --out build/inference.jpg
	$(PY) tests/e2e/demo.py

# ruff.toml; the pinned ruff comes with `make venv`.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint package package-offline kuiperd
	$(PY) -m pytest tests

# Local only: skips what needs kuiperd, Go or mosquitto.
test-fast: lint package package-offline
	$(PY) -m pytest tests --fast

bench: package kuiperd
	$(PY) bench/run.py
	$(PY) bench/throughput.py

clean:
	rm -rf build models/.built
