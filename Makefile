# The defect eKuiper plugin. On a fresh machine: `make demo`, then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FIXTURES ?= ../shared/fixtures
KUIPER_VERSION := 2.4.2
KUIPERD_DIR := .cache/kuiperd-$(KUIPER_VERSION)
KUIPERD := $(KUIPERD_DIR)/kuiperd
# What eKuiper installs: the zip's root is the plugin dir.
PLUGIN_FILES := main.py label_func.py label.py inference.py image_input.py settings.py function_server.py config.json \
                defect.json requirements.txt install.sh
MODEL_FILES := models/model.xml models/model.bin models/mobilenet_v2_1.0_224_quant.tflite \
               models/imagenet_labels.txt models/sample_surface.png

.PHONY: venv models package kuiperd demo test test-fast bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r tests/requirements.txt
	touch $@

models: models/.built
models/.built: models/build_models.py tests/synthetic_surface.py $(VENV)/.installed
	@test -d $(FIXTURES)/models || { echo "fixtures not found at $(FIXTURES) (set FIXTURES=...)"; exit 1; }
	$(PY) models/build_models.py --fixtures $(FIXTURES)
	touch $@

package: build/defect.zip
build/defect.zip: $(PLUGIN_FILES) functions/*.json models/.built Makefile
	rm -rf build/defect build/defect.zip && mkdir -p build/defect/models build/defect/functions
	cp $(PLUGIN_FILES) build/defect/
	cp functions/*.json build/defect/functions/
	cp $(MODEL_FILES) build/defect/models/
	# python -m zipfile writes directory entries too, which kuiperd needs to unpack nested folders.
	cd build/defect && ../../$(PY) -m zipfile -c ../defect.zip *
	@echo "wrote $@"

kuiperd: $(KUIPERD)
$(KUIPERD): tests/e2e/build_kuiperd.sh
	tests/e2e/build_kuiperd.sh $(KUIPER_VERSION) $(KUIPERD_DIR)

demo: models
	$(PY) label.py $(FIXTURES)/images/cat.bmp
	$(PY) label.py $(FIXTURES)/images/cat_1080p.jpg
	$(PY) inference.py models/sample_surface.png

test: package kuiperd
	$(PY) -m pytest tests

# Local only: skips what needs kuiperd, Go or mosquitto.
test-fast: package
	$(PY) -m pytest tests --fast

bench: package
	$(PY) bench/run.py

clean:
	rm -rf build models/.built
