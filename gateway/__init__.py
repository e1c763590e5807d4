"""PBX event gateway: phone systems to RabbitMQ and back."""
