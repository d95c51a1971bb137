"""Apache Airflow provider for the Altcraft marketing platform."""

__version__ = "0.1.0"
