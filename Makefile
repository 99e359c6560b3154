# The defect eKuiper plugin. On a fresh machine: `make demo`, then `make test`.
SHELL := /bin/bash
# The interpreter the dev venv is made with (PYTHON is the offline zip's target Python, below).
VENV_PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FIXTURES ?= ../shared/fixtures
KUIPER_VERSION := 2.4.2
# kuiperd is kept across clones (and CI runs): built once per version, with -tags full (the video
# source; needs Debian's libzmq3-dev, which build_kuiperd.sh installs). "-full": an older plain build is not reused.
KUIPERD_DIR := $(HOME)/.cache/defect/kuiperd-$(KUIPER_VERSION)-full
KUIPERD := $(KUIPERD_DIR)/kuiperd
# What eKuiper installs: the zip's root is the plugin dir.
# Every root module (the entry, the eKuiper adapters, each declared function's model: core/catalog.py).
PLUGIN_FILES := $(wildcard *.py) config.json defect.json requirements.txt requirements.lock install.sh
# The plugin's packages, shipped as folders: core/ (pure logic) and runtime/ (what kuiperd drives).
PLUGIN_PACKAGES := core runtime
PACKAGE_FILES := $(wildcard $(addsuffix /*.py,$(PLUGIN_PACKAGES)))
MODEL_FILES := models/model.xml models/model.bin models/mobilenet_v2_1.0_224_quant.tflite \
               models/imagenet_labels.txt models/sample_surface.png models/sample_cat.jpg

.PHONY: venv models package package-offline test-platforms kuiperd demo lint test test-fast bench clean serve package-service \
        grpc-stubs ekuiper-service grpcurl

# requirements.txt's lines marked `# --no-deps` (the ekuiper SDK: its pynng pin has no aarch64
# wheel) are installed after the rest without their dependencies, here as in install.sh.
REQUIREMENTS_WITH_DEPS := <(grep -v '^[^\#]*\# --no-deps' requirements.txt)
REQUIREMENTS_NO_DEPS := <(sed -n 's/^\([^\#]*[^\#[:space:]]\)[[:space:]]*\# --no-deps.*/\1/p' requirements.txt)

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt service/requirements.txt tests/requirements.txt
	$(VENV_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r $(REQUIREMENTS_WITH_DEPS) -r service/requirements.txt -r tests/requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r $(REQUIREMENTS_NO_DEPS)
	touch $@

# `make models` copies from $(FIXTURES) when that folder exists (CI and tests stay offline); on a fresh
# clone it downloads from the Coral test_data commit pinned in tools/fetch_models.py, each file's sha256
# checked (MODELS_URL=... for a mirror). MODELS_OUT: where to write (the tests build into a temp folder).
MODELS_URL ?=
MODELS_OUT ?= models
models: models/.built
models/.built: tools/build_models.py tools/fetch_models.py tools/synthetic_surface.py $(VENV)/.installed
	$(PY) tools/build_models.py $(if $(wildcard $(FIXTURES)/models),--fixtures $(FIXTURES)) \
	  $(if $(MODELS_URL),--url '$(MODELS_URL)') --out $(MODELS_OUT)
	touch $(MODELS_OUT)/.built

# Your own defect model in the zip (e.g. an anomalib export): `make package CUSTOM_MODEL=path/to/model.xml`
# puts it (and its .bin) in models/custom/ and makes it the zip's defect.model.
CUSTOM_MODEL ?=

package: build/defect.zip
build/defect.zip: $(PLUGIN_FILES) $(PACKAGE_FILES) functions/*.json models/.built Makefile build/.custom-model $(CUSTOM_MODEL)
	rm -rf build/defect build/defect.zip && mkdir -p build/defect/models build/defect/functions
	cp $(PLUGIN_FILES) build/defect/
	for p in $(PLUGIN_PACKAGES); do mkdir -p build/defect/$$p && cp $$p/*.py build/defect/$$p/; done
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
# `make package-offline PLATFORM=linux_aarch64 PYTHON=3.13` writes build/defect-offline-linux_aarch64-cp313.zip;
# build/defect-offline.zip is the linux_x86_64 / 3.11 one. pip takes each tag literally: list the
# manylinux levels the wheels are published for (openvino's aarch64 wheel is manylinux_2_35 only).
PLATFORM ?= linux_x86_64
PYTHON ?= 3.11
MANYLINUX_x86_64 := manylinux2014 manylinux_2_17 manylinux_2_26 manylinux_2_27 manylinux_2_28
MANYLINUX_aarch64 := $(MANYLINUX_x86_64) manylinux_2_31 manylinux_2_34 manylinux_2_35
# Downloaded once per target and requirements (CI's second run needs no index).
WHEEL_CACHE := $(HOME)/.cache/defect/wheels
OFFLINE_ZIP := build/defect-offline-$(PLATFORM)-cp$(subst .,,$(PYTHON)).zip
package-offline: $(OFFLINE_ZIP) build/defect-offline.zip
build/defect-offline.zip: build/defect-offline-linux_x86_64-cp311.zip
	cp $< $@
# The wheels are requirements.lock's, hash-checked. On aarch64, pynng's wheels get libatomic.so.1
# grafted in (tests/platforms/graft_libatomic.py), and the zip's lock their new hashes.
LOCK_WITH_DEPS := <(grep -v '^[^\#]*\# --no-deps' requirements.lock)
LOCK_NO_DEPS := <(sed -n 's/^\([^\#]*[^\#[:space:]]\)[[:space:]]*\# --no-deps.*/\1/p' requirements.lock)
# $*: <platform>-cp<3xx>, e.g. linux_aarch64-cp311
build/defect-offline-%.zip: build/defect.zip requirements.lock tests/platforms/graft_libatomic.py Makefile
	@case "$*" in linux_x86_64-cp31[123]|linux_aarch64-cp31[123]) ;; \
	  *) echo "PLATFORM must be linux_x86_64 or linux_aarch64, PYTHON 3.11, 3.12 or 3.13 (got $*)"; exit 1;; esac
	@set -euo pipefail; stem=$*; arch=$${stem%-cp*}; arch=$${arch#linux_}; cp=$${stem##*-cp}; \
	tags=$$(case $$arch in x86_64) echo $(MANYLINUX_x86_64);; aarch64) echo $(MANYLINUX_aarch64);; esac); \
	key=$$({ cat requirements.lock; echo "$$tags"; } | sha256sum | cut -c1-12); cache=$(WHEEL_CACHE)/$*-$$key; \
	if [ ! -f $$cache/.complete ]; then \
	  rm -rf $$cache.tmp.$$$$ && mkdir -p $$cache.tmp.$$$$; \
	  args=(--disable-pip-version-check -q --only-binary=:all: --python-version 3.$${cp#3} --implementation cp \
	        --abi cp$$cp --abi abi3 --abi none -d $$cache.tmp.$$$$); \
	  for tag in $$tags; do args+=(--platform $${tag}_$$arch); done; \
	  $(PY) -m pip download "$${args[@]}" --require-hashes -r $(LOCK_WITH_DEPS); \
	  $(PY) -m pip download "$${args[@]}" --require-hashes --no-deps -r $(LOCK_NO_DEPS); \
	  touch $$cache.tmp.$$$$/.complete && rm -rf $$cache && mv $$cache.tmp.$$$$ $$cache; fi; \
	rm -rf build/offline-$* $@ && cp -r build/defect build/offline-$* && mkdir build/offline-$*/wheels; \
	cp $$cache/*.whl build/offline-$*/wheels/; \
	if [ $$arch = aarch64 ]; then $(PY) tests/platforms/graft_libatomic.py build/offline-$*/wheels build/offline-$*/requirements.lock; fi; \
	cd build/offline-$* && ../../$(PY) -m zipfile -c ../defect-offline-$*.zip *; \
	echo "wrote $@: wheels for $$arch ($$tags), CPython 3.$${cp#3}"

kuiperd: $(KUIPERD)
$(KUIPERD): | tools/build_kuiperd.sh
	tools/build_kuiperd.sh $(KUIPER_VERSION) $(KUIPERD_DIR)

demo: package kuiperd
	$(PY) label.py models/sample_cat.jpg
	$(PY) inference.py models/sample_surface.png --out build/inference.jpg
	$(PY) tools/demo.py
	$(PY) tools/demo_camera.py

# ruff.toml; the pinned ruff comes with `make venv`.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# tests/platforms installs these in Debian chroots (12 arm64 under qemu; 13 x86_64); part of `make test`.
PLATFORM_ZIPS := build/defect-offline-linux_aarch64-cp311.zip build/defect-offline-linux_x86_64-cp313.zip
test-platforms: lint package $(PLATFORM_ZIPS)
	$(PY) -m pytest tests/platforms

# Under a /tmp of its own: the plugin and kuiperd meet at fixed /tmp/plugin_defect.ipc and
# /tmp/func_*.ipc paths, so a `make bench` (or another run) beside it would take the tests' plugin traffic.
test: lint package package-offline package-service $(PLATFORM_ZIPS) kuiperd
	tools/with_private_tmp.sh $(PY) -m pytest tests

# Local only: skips what needs kuiperd, Go or mosquitto.
test-fast: lint package package-offline package-service
	tools/with_private_tmp.sh $(PY) -m pytest tests --fast

# Each bench writes build/<name>.json; bench.pages then writes docs/benchmarks.md and docs/bench/*.svg from them.
bench: package kuiperd
	$(PY) -m bench.run
	$(PY) -m bench.throughput
	$(PY) -m bench.service_bench
	$(PY) -m bench.grpc_stream
	$(PY) -m bench.camera_bench
	$(PY) -m bench.bombs
	$(PY) -m bench.stages
	$(PY) -m bench.named_models
	$(PY) -m bench.pages

# The models as a network service (README "Service"): HTTP with /docs and gRPC, on 127.0.0.1.
SERVE_ARGS ?= --host 127.0.0.1 --http-port 8084 --grpc-port 50051
serve: $(VENV)/.installed models/.built
	$(PY) service/service.py $(SERVE_ARGS)

# The service for another box: the plugin zip's files plus service/; there, one command:
# unzip -q defect-service.zip -d defect-service && bash defect-service/service/serve.sh --host 0.0.0.0 \
#   --tls-cert cert.pem --tls-key key.pem --api-key-file key   (a network address needs TLS and a key; docs/security.md)
SERVICE_FILES := $(wildcard service/*.py service/*.proto) service/requirements.txt service/serve.sh
package-service: build/defect-service.zip
build/defect-service.zip: build/defect.zip $(SERVICE_FILES)
	rm -rf build/service build/defect-service.zip && cp -r build/defect build/service
	# The pure layer, the models and the config; not kuiperd's side (the SDK adapters, the supervisor).
	cd build/service && rm -rf main.py label_func.py batch_func.py runtime functions defect.json install.sh
	mkdir -p build/service/service && cp $(SERVICE_FILES) build/service/service/
	cd build/service && ../../$(PY) -m zipfile -c ../defect-service.zip *
	@echo "wrote $@"

# grpcurl for the gRPC tests and README examples, built once per version from the Go module proxy
# (tests/integration/test_service_grpc.py builds it the same way when it is missing).
GRPCURL_VERSION := 1.9.4
GRPCURL := $(HOME)/.cache/defect/grpcurl-$(GRPCURL_VERSION)/grpcurl
grpcurl: $(GRPCURL)
$(GRPCURL):
	GOBIN=$(dir $(GRPCURL)) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v$(GRPCURL_VERSION)

# After editing service/defect.proto: the committed stubs again (a test fails while they differ).
grpc-stubs: $(VENV)/.installed
	$(PY) service/grpc_stubs.py

# The zip eKuiper's POST /services registers (README "From eKuiper"): the service's addresses as seen from kuiperd.
EKUIPER_SERVICE_ARGS ?= --grpc 127.0.0.1:50051 --http http://127.0.0.1:8084
ekuiper-service: $(VENV)/.installed
	$(PY) service/ekuiper_service.py $(EKUIPER_SERVICE_ARGS) -o build/defect_service.zip

clean:
	rm -rf build models/.built
