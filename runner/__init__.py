"""SSH mode (push): run one workflow step on an external host through ansible-runner."""
