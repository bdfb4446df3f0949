"""`python -m inventory_svc`: run the service's worker (consumer and HTTP API) in this process."""
from inventory_svc.app import create_runtime

if __name__ == "__main__":
    create_runtime().main()
