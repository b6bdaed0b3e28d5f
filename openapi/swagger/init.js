// Swagger UI on this listener's own document (the gateway's is the whole
// API, a service listener's its part).  A script file, not an inline
// script: the gateway's Content-Security-Policy allows only 'self'.

window.addEventListener('load', function () {
    window.ui = SwaggerUIBundle({
        url: '/openapi.json',
        dom_id: '#swagger-ui',
        deepLinking: true,
        persistAuthorization: true,
        tryItOutEnabled: false
    });
});
