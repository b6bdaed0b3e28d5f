#!/bin/sh
# a token secret of the container's own on its first start, kept in the
# "secret" volume across restarts
set -e

if [ ! -s /etc/nginx/chat-secret/jwt ]; then
    mkdir -p /etc/nginx/chat-secret
    openssl rand -hex 32 > /etc/nginx/chat-secret/jwt
    chmod 0600 /etc/nginx/chat-secret/jwt
fi

exec "$@"
