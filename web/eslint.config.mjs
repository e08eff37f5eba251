// eslint over the web client's modules (`make lint`): ESLint's recommended rules, for
// browser ES modules, plus a few that keep the code as it is written (strict equality, no
// var, no unused names, no stray console output).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["js/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: globals.browser,
    },
    linterOptions: {
      reportUnusedDisableDirectives: "error",
    },
    rules: {
      eqeqeq: "error",
      "no-var": "error",
      "prefer-const": "error",
      "no-console": "error",
      "no-unused-vars": ["error", { args: "after-used", caughtErrors: "all" }],
    },
  },
];
