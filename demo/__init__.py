"""`make demo`, the docker-compose set-up and the end-to-end tests: running this project in a real Airflow."""
