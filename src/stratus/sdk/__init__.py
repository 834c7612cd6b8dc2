"""What users import: the deployment decorator and the handler contexts."""
