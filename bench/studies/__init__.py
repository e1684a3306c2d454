"""One-off studies behind the accuracy and speed docs; each is listed in bench/studies/README.md."""
