from .cli import run_cli

if __name__ == "__main__":  # vLLM's spawned workers re-import this module: never rerun the CLI
    run_cli()
