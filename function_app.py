"""Composition root: builds the Durable Functions app and registers the blueprints. Nothing else."""

import azure.durable_functions as df

app = df.DFApp()
