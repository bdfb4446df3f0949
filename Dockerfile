# One image for the three services (and the setup step of compose.yaml).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FAUST_LOOP=uvloop
# compose's `setup` writes the signing keys (folders 0700, private keys 0600) into the `keys` volume
# at /run/saga-keys and the services read them, all from this image, so all run as this one user.
# A new named volume takes the owner of the folder it is mounted on, so the folder is made here,
# the user's own; otherwise the volume's top folder stays root's and setup cannot write into it.
# test_compose_agrees.py checks both, and that no service of compose.yaml runs as another `user:`.
RUN useradd --create-home --uid 10001 --user-group saga \
 && install -d -o saga -g saga -m 0700 /run/saga-keys
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY order_svc order_svc
COPY inventory_svc inventory_svc
COPY payment_svc payment_svc
COPY saga_cli saga_cli
COPY connect connect
# With `otel` (traces when OTEL_* configures an exporter), without `bench` (matplotlib draws only
# `saga bench`'s figure) and `dev`.
RUN pip install -e '.[otel]'
USER saga
