# Simulation-only qnn-flows: training, export, FINN streamlining, folding, estimates,
# bit-exact verification, packaging, CPU baselines and the design search. No Vivado, no board.
# Builds with the same setup script as a workstation and CI; runs the tests by default.
#   docker build -t qnn-flows . && docker run --rm qnn-flows
#   docker run --rm -v $PWD/build:/opt/qnn-flows/build qnn-flows .venv/bin/flows build --board pynq-z2
# Where the public base image or package indexes are not reachable, point the build at mirrors:
#   docker build --build-arg BASE_IMAGE=registry.example/python:3.11-slim \
#                --build-arg PIP_INDEX_URL=https://pypi.example/simple \
#                --build-arg TORCH_INDEX_URL=https://pypi.example/torch-cpu -t qnn-flows .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN apt-get update && apt-get install -y --no-install-recommends git build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/qnn-flows
COPY . .
# torch==2.13.0 from PyTorch's CPU index (the default index serves a multi-GB CUDA build)
ENV PIP_INDEX_URL=${PIP_INDEX_URL} PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL}
RUN scripts/setup.sh
ENV PATH=/opt/qnn-flows/.venv/bin:$PATH
# the simulation-only tests: the default pytest selection (no vivado, board or gpu markers)
CMD [".venv/bin/python", "-m", "pytest", "-q"]
