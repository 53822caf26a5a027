# Simulation-only qnn-flows: training, export, FINN streamlining, folding, estimates,
# bit-exact verification, packaging and CPU baselines. No Vivado, no board.
# Builds with the same setup script as a workstation and CI; runs the tests by default.
#   docker build -t qnn-flows . && docker run --rm qnn-flows
#   docker run --rm -v $PWD/build:/opt/qnn-flows/build qnn-flows .venv/bin/flows build --board pynq-z2
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/qnn-flows
COPY . .
# torch==2.13.0 from PyTorch's CPU index (the default index serves a multi-GB CUDA build)
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN scripts/setup.sh
ENV PATH=/opt/qnn-flows/.venv/bin:$PATH
CMD [".venv/bin/python", "-m", "pytest", "-q"]
