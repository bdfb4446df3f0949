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
# No USER on purpose: compose's `setup` writes the signing keys (folders 0700, private keys 0600)
# into the `keys` volume and the services read them, all from this image, so all run as the same
# user (root). Should a USER ever be added here, it applies to both alike (test_compose_agrees.py
# checks that no service of compose.yaml runs as another `user:`); create /run/saga-keys owned by
# it then, or the new volume's top folder stays root's and setup cannot write into it.
