"""Workflow: business rules and reactions that plug into the write path (see gateway.hooks).

Each module keeps its own RULES and REACTIONS lists; gateway.workflow.installed gathers them and
Services.build installs them all."""
