using InfLlmV2.Onnx.Cli;

return CliApp.Run(args);
