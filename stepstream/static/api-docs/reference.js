// The REST reference (/api/v1/docs): Swagger UI, vendored in /static/vendor/swagger-ui/,
// over the document the server serves. No inline script (the page's CSP forbids it),
// nothing loaded from elsewhere, and the secret key typed in "Authorize" is kept in
// the page's memory only (persistAuthorization off): it goes nowhere but the calls.
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // the default asks validator.swagger.io for a badge
    persistAuthorization: false,
    displayOperationId: true,
    displayRequestDuration: true,
    filter: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    defaultModelExpandDepth: 3,
    tryItOutEnabled: false,
  });
});
