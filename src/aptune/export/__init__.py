"""Export a pruned, merged model in Hugging Face format that stock ``from_pretrained`` reloads."""
