# trainsrv trainer image (used by docker-compose.yml). By default torch comes from PyTorch's CPU index
# (the small CPU wheel, not the multi-GB CUDA build PyPI serves); for a GPU host pass the index of the
# CUDA flavour that matches the driver, e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LC_ALL=C.UTF-8
WORKDIR /opt/trainsrv
COPY . .
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first, from that index only; the project's install then finds the pin satisfied
# (2.13.0+cpu satisfies torch==2.13.0) and takes everything else from PyPI.
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==2.13.0" \
 && pip install --no-cache-dir -c constraints.txt -e . \
 && python -c "import torch; print('torch', torch.__version__)"
USER nobody
EXPOSE 9100
CMD ["trainsrv", "serve", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"]
