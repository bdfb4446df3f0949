"""`python -m payment_svc`: run the service's worker (consumer and HTTP API) in this process."""
from payment_svc.app import create_runtime

if __name__ == "__main__":
    create_runtime().main()
