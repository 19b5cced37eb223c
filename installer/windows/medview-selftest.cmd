@echo off
rem MedView self-test: opens the sample series and a recording, runs the models, one line per step.
rem Exit code 0 when every step passed. Extra arguments go to MedView, e.g. --self-test-recording C:\path\rec.wav
"%~dp0python\python.exe" "%~dp0medview.pyw" --self-test %*
set code=%ERRORLEVEL%
if "%~1"=="" pause
exit /b %code%
