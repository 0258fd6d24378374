# phone-sim: the emulated phones (the phone-sim command and the Python package).
# Installed by scripts/bootstrap, the script CI installs with (scripts/test runs it).
#   docker build -t phone-sim .
#   docker run --rm phone-sim tls-check pbx.example.com:5061 --all-firmwares
FROM debian:bookworm-slim

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/phone-sim
COPY pyproject.toml README.md ./
COPY phone_sim ./phone_sim
COPY scripts ./scripts
COPY fixtures/asterisk ./fixtures/asterisk
RUN scripts/bootstrap
ENV PATH=/opt/phone-sim/.venv/bin:$PATH

ENTRYPOINT ["phone-sim"]
CMD ["--help"]
