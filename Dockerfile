# One image for the three services (and the setup step of compose.yaml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY order_svc order_svc
COPY inventory_svc inventory_svc
COPY payment_svc payment_svc
COPY saga_cli saga_cli
COPY connect connect
RUN pip install --no-cache-dir -e .
ENV PYTHONUNBUFFERED=1 FAUST_LOOP=uvloop
