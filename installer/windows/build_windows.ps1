<#
.SYNOPSIS
  Build MedView's offline Windows installer (medview-<version>-win64-setup.exe) on a connected Windows build machine.

.DESCRIPTION
  Run from the repository root in PowerShell 5.1 or 7 on Windows 10/11 x64 with:
    - Python 3.11 x64 from python.org (the "py" launcher finds it: py -3.11),
    - Git for Windows (to take the files git sees in the checkout; without git the sources are copied),
    - Inno Setup 6 (ISCC.exe),
    - internet access (PyPI, python.org, aka.ms).

  Steps (all output under -OutDir, default dist\windows):
    1. a build environment (venv) with pip 24.3.1;
    2. medview as a wheel from the checkout;
    3. the wheelhouse: every runtime dependency as a win_amd64 / cp311 (or pure Python) wheel, resolved with
       constraints.txt by pip running on Windows. (pip evaluates environment markers against the interpreter
       it runs on, not against --platform: resolving for Windows on a Linux machine pulls torch's
       "platform_system == 'Linux'" CUDA packages and fails. pypa/pip#11664.)
       PyPI's torch for Windows is the CPU build; the build stops if a CUDA package slips in;
    4. requirements.lock (make_lock.py): every wheel by version and sha256, resolved again from the
       wheelhouse alone with no pip configuration;
    5. the application folder: the python.org embeddable Python 3.11 (checked against -PythonSha256), the
       locked wheels installed into its Lib\site-packages with pip --no-index --require-hashes, byte-compiled,
       the resources (model bundles, sample data) and the launchers medview.pyw / medview-selftest.cmd;
    6. the Microsoft Visual C++ 2015-2022 x64 runtime installer (torch's DLLs need it), run by setup when missing;
    7. ISCC medview.iss: one setup .exe, and its SHA256 beside it.

.PARAMETER PythonSha256
  SHA-256 of python-<PythonVersion>-embed-amd64.zip as published on python.org's release page. Give it: without
  it the script only prints the hash it computed.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File installer\windows\build_windows.ps1 -PythonSha256 <hash from python.org>
#>
[CmdletBinding()]
param(
    [string]$OutDir = "dist\windows",
    [string]$PythonVersion = "3.11.9",  # the last 3.11 release with Windows binaries
    [string]$PythonSha256 = "",
    [string]$Iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe",
    [string]$PipVersion = "24.3.1"
)
$ErrorActionPreference = "Stop"
$ProgressPreference = "SilentlyContinue"  # Invoke-WebRequest is many times slower with its progress bar

function Invoke-Checked {
    # PowerShell does not stop on a native command's exit code: check it
    param([string]$Command, [string[]]$Arguments)
    & $Command @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Command $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

function Step([string]$Text) { Write-Host "== $Text" }

$repo = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path
Set-Location $repo
if (-not [Environment]::Is64BitOperatingSystem) { throw "build on 64-bit Windows" }
$version = (& py -3.11 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
if ($LASTEXITCODE -ne 0) { throw "no Python 3.11 found by the py launcher (install Python 3.11 x64 from python.org)" }
Invoke-Checked py @("-3.11", "-c", "import struct, sys; sys.exit(struct.calcsize('P') != 8)")  # 64-bit Python

$out = (New-Item -ItemType Directory -Force -Path $OutDir).FullName
$work = Join-Path ([IO.Path]::GetTempPath()) ("medview-win-build-" + [Guid]::NewGuid().ToString("N").Substring(0, 8))
$stage = Join-Path $work "stage"
$app = Join-Path $stage "app"
$wheelhouse = Join-Path $out "wheelhouse-$version"
$lock = Join-Path $out "requirements-$version-win_amd64.lock"
New-Item -ItemType Directory -Force -Path $work, $app, (Join-Path $stage "redist") | Out-Null
if (Test-Path $wheelhouse) { Remove-Item -Recurse -Force $wheelhouse }
New-Item -ItemType Directory -Path $wheelhouse | Out-Null

try {
    Step "build environment with pip $PipVersion"
    Invoke-Checked py @("-3.11", "-m", "venv", "$work\build-env")
    $python = "$work\build-env\Scripts\python.exe"
    Invoke-Checked $python @("-m", "pip", "install", "-q", "pip==$PipVersion")

    Step "medview wheel from this checkout"
    $source = Join-Path $work "source"
    New-Item -ItemType Directory -Path $source | Out-Null
    $files = @()
    if (Get-Command git -ErrorAction SilentlyContinue) {
        $files = git ls-files --cached --others --exclude-standard | Where-Object { Test-Path -LiteralPath $_ -PathType Leaf }
    }
    if (-not $files) {
        $files = @("pyproject.toml", "README.md") + (Get-ChildItem -Recurse -File medview, training |
            Where-Object { $_.FullName -notmatch "\\__pycache__\\" } | Resolve-Path -Relative)
    }
    foreach ($file in $files) {
        $destination = Join-Path $source $file
        New-Item -ItemType Directory -Force -Path (Split-Path $destination) | Out-Null
        Copy-Item -LiteralPath $file -Destination $destination
    }
    Invoke-Checked $python @("-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", $wheelhouse, $source)
    $medviewWheel = (Get-ChildItem "$wheelhouse\medview-$version-*.whl").FullName

    Step "runtime dependencies for win_amd64 / cp311 (constraints.txt)"
    Invoke-Checked $python @("-m", "pip", "download", "-q", "--only-binary=:all:", "-c", "constraints.txt",
        "-d", $wheelhouse, $medviewWheel)
    $cuda = Get-ChildItem $wheelhouse -Filter *.whl | Where-Object { $_.Name -match "^(nvidia|triton|cuda)" }
    if ($cuda) { throw "CUDA packages in the wheelhouse: $($cuda.Name -join ', ')" }
    $torch = (Get-ChildItem $wheelhouse -Filter "torch-*.whl").Name
    if ($torch -notmatch "win_amd64") { throw "unexpected torch wheel: $torch" }

    Step "requirements.lock from the wheelhouse alone"
    $saved = @{}
    @(Get-ChildItem env: | Where-Object { $_.Name -like "PIP_*" }) | ForEach-Object {
        $saved[$_.Name] = $_.Value
        Remove-Item "env:$($_.Name)"
    }
    $env:PIP_CONFIG_FILE = "nul"  # os.devnull: pip reads no configuration file
    try {
        Invoke-Checked $python @("-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--no-index",
            "--only-binary=:all:", "--find-links", $wheelhouse, "--report", "$work\report.json", "medview==$version")
        Invoke-Checked $python @("$PSScriptRoot\make_lock.py", "$work\report.json", $wheelhouse, $lock)

        Step "embeddable Python $PythonVersion"
        $zip = Join-Path $work "python-$PythonVersion-embed-amd64.zip"
        Invoke-WebRequest "https://www.python.org/ftp/python/$PythonVersion/python-$PythonVersion-embed-amd64.zip" -OutFile $zip
        $hash = (Get-FileHash -Algorithm SHA256 $zip).Hash.ToLower()
        if ($PythonSha256) {
            if ($hash -ne $PythonSha256.ToLower()) { throw "python zip SHA256 $hash does not match $PythonSha256" }
        } else {
            Write-Warning "python zip not checked: SHA256 $hash (compare with python.org, then pass -PythonSha256)"
        }
        Expand-Archive $zip -DestinationPath "$app\python"
        # the embeddable Python reads its path from python311._pth: add site-packages, let site run (.pth files)
        $pth = Get-ChildItem "$app\python" -Filter "python*._pth" | Select-Object -First 1
        $lines = (Get-Content $pth.FullName) -replace "^#\s*import site", "import site"
        Set-Content -Path $pth.FullName -Value ($lines + "Lib\site-packages") -Encoding ascii

        Step "locked packages into the application's site-packages"
        $sitePackages = "$app\python\Lib\site-packages"
        Invoke-Checked $python @("-m", "pip", "install", "-q", "--no-index", "--find-links", $wheelhouse,
            "--require-hashes", "--only-binary=:all:", "--no-warn-script-location", "--target", $sitePackages,
            "-r", $lock)
    } finally {
        Remove-Item env:PIP_CONFIG_FILE -ErrorAction SilentlyContinue
        foreach ($name in $saved.Keys) { Set-Item "env:$name" $saved[$name] }
    }
    # pip --target also wrote console-script launchers that point at the build environment: not wanted
    Remove-Item -Recurse -Force "$sitePackages\bin", "$sitePackages\Scripts" -ErrorAction SilentlyContinue
    Invoke-Checked $python @("-m", "compileall", "-q", "-j", "0", $sitePackages)

    Step "resources and launchers"
    New-Item -ItemType Directory -Path "$app\resources" | Out-Null
    Copy-Item -Recurse resources\models, resources\samples "$app\resources\"
    Copy-Item "$PSScriptRoot\medview.pyw", "$PSScriptRoot\medview-selftest.cmd" $app
    Copy-Item installer\README.md "$app\README.md"

    Step "Microsoft Visual C++ runtime installer"
    Invoke-WebRequest "https://aka.ms/vs/17/release/vc_redist.x64.exe" -OutFile "$stage\redist\vc_redist.x64.exe"
    $signature = Get-AuthenticodeSignature "$stage\redist\vc_redist.x64.exe"
    if ($signature.Status -ne "Valid" -or $signature.SignerCertificate.Subject -notmatch "Microsoft Corporation") {
        throw "vc_redist.x64.exe is not signed by Microsoft"
    }

    Step "Inno Setup"
    if (-not (Test-Path $Iscc)) { throw "ISCC.exe not found at $Iscc (install Inno Setup 6 or pass -Iscc)" }
    Invoke-Checked $Iscc @("/Q", "/DAppVersion=$version", "/DStageDir=$stage", "/O$out",
        "$PSScriptRoot\medview.iss")
    $setup = Join-Path $out "medview-$version-win64-setup.exe"
    $setupHash = (Get-FileHash -Algorithm SHA256 $setup).Hash.ToLower()
    "$setupHash  medview-$version-win64-setup.exe" | Set-Content -Encoding ascii "$setup.sha256"
    $size = "{0:N0} MB" -f ((Get-Item $setup).Length / 1MB)
    Write-Host "$setup ($size), SHA256 $setupHash"
} finally {
    Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}
