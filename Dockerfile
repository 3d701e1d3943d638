# trainsrv trainer image (used by docker-compose.yml). The CPU torch wheel keeps the image small;
# for CUDA, install the torch build matching your driver instead of the pin below.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LC_ALL=C.UTF-8
WORKDIR /opt/trainsrv
COPY . .
# TORCH_INDEX_URL: an index that serves the torch build you want (CPU or a CUDA flavour).
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
 && pip install --no-cache-dir -c constraints.txt -e .
USER nobody
CMD ["trainsrv", "serve"]
