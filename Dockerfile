# The validator in a container, on a CUDA base (docs/validator.md, "Docker"):
#   docker build -t finetune-validator .
#   docker run --gpus all -v ~/.bittensor/wallets:/root/.bittensor/wallets:ro \
#       -v finetune-data:/root/.finetune -e WANDB_API_KEY finetune-validator \
#       --wallet.name my_cold --wallet.hotkey my_hot --device cuda:0
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_DISABLE_TELEMETRY=1 HF_HOME=/root/.finetune/hf
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common git ca-certificates \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/finetune-subnet
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# the CUDA build of torch first, so requirements.txt finds its pin satisfied
RUN pip install --upgrade pip && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126
COPY requirements.txt setup.py README.md ./
RUN pip install -r requirements.txt
COPY constants constants
COPY finetune finetune
COPY model model
COPY neurons neurons
COPY utilities utilities
RUN pip install --no-deps .

VOLUME ["/root/.finetune"]
ENTRYPOINT ["finetune-validator"]
CMD ["--help"]
